//! Running a command as another user (`user = "postgres"`): the account is looked up
//! once, before any process starts, and the child drops to it (supplementary groups,
//! group, then user) between fork and exec, so the daemon need not run dumps as root.

use std::ffi::{CStr, CString};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// A user account a command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// Its name, as configured.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Every group it belongs to (its primary group included).
    pub groups: Vec<u32>,
    /// Its home directory: the command's working directory, and `$HOME`.
    pub home: PathBuf,
}

/// Look a user up by name in the system's account database; the error says what to fix.
pub fn lookup(name: &str) -> Result<RunAs, String> {
    let missing = || {
        format!(
            "user {name:?} does not exist on this machine: create it, or name an existing one (`getent passwd` lists them)"
        )
    };
    let cname = CString::new(name).map_err(|_| missing())?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data that getpwnam_r fills; buf outlives every use of the
    // pointers it sets, which are copied out below.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    loop {
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as above; buf.len() is the room getpwnam_r may use.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => return Err(missing()),
            0 => break,
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => {
                return Err(format!(
                    "user {name:?} could not be looked up: {}; check the system's account database (nsswitch, LDAP, sssd)",
                    std::io::Error::from_raw_os_error(e)
                ));
            }
        }
    }
    // SAFETY: getpwnam_r succeeded, so pw_dir points into buf as a NUL-terminated string.
    let home = unsafe { CStr::from_ptr(pwd.pw_dir) }
        .to_string_lossy()
        .into_owned();
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: groups has room for n entries; getgrouplist writes at most n and sets n.
        let rc = unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            break;
        }
        if groups.len() >= 65536 {
            groups = vec![gid];
            break;
        }
        let want = (n.max(0) as usize).max(groups.len() * 2);
        groups.resize(want, 0);
    }
    Ok(RunAs {
        name: name.to_string(),
        uid,
        gid,
        groups,
        home: PathBuf::from(home),
    })
}

/// Whether this process may start commands as `who`: only root may switch users, and
/// only while it keeps the capabilities to (a systemd unit's `CapabilityBoundingSet=`
/// may have dropped them); anyone may "switch" to themselves. The error names the fix.
pub fn may_run_as(who: &RunAs) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if me == who.uid {
        return Ok(());
    }
    if me != 0 {
        return Err(format!(
            "cannot run commands as user {:?}: cairn runs as uid {me}, and only root can start a process as another user; run the daemon as root, or leave `user` out",
            who.name
        ));
    }
    // CAP_SETGID is 6 and CAP_SETUID 7 in every Linux ABI.
    // SAFETY: PR_CAPBSET_READ only reads this process's bounding set.
    let kept =
        |cap: libc::c_ulong| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 1;
    if !(kept(6) && kept(7)) {
        return Err(format!(
            "cannot run commands as user {:?}: cairn runs without the capabilities CAP_SETUID and CAP_SETGID (a systemd unit's CapabilityBoundingSet= drops them); `systemctl edit cairn` and add [Service] CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID, or leave `user` out",
            who.name
        ));
    }
    Ok(())
}

/// Make `cmd` run as `who`: its groups, group and user are set in the child before
/// exec, its working directory and `HOME`, `USER` and `LOGNAME` are the account's.
pub fn apply(cmd: &mut Command, who: &RunAs) {
    let (uid, gid, groups) = (who.uid, who.gid, who.groups.clone());
    // SAFETY: geteuid/getegid have no preconditions and cannot fail.
    let same = unsafe { libc::geteuid() == uid && libc::getegid() == gid };
    let home = if who.home.is_dir() {
        who.home.clone()
    } else {
        PathBuf::from("/")
    };
    cmd.current_dir(&home)
        .env("HOME", &who.home)
        .env("USER", &who.name)
        .env("LOGNAME", &who.name);
    if same {
        // Already this user (a daemon run as `postgres` with `user = "postgres"`).
        return;
    }
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // setgroups, setgid and setuid, which are async-signal-safe; `groups` was built
    // before the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            // SAFETY: as above; each returns -1 with errno set on failure.
            if libc::geteuid() == 0 && libc::setgroups(groups.len() as _, groups.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_and_a_made_up_user_is_named_in_the_error() {
        let root = lookup("root").expect("root exists");
        assert_eq!(root.uid, 0);
        assert!(root.groups.contains(&0));
        let e = lookup("no-such-user-cairn").expect_err("missing");
        assert!(e.contains("\"no-such-user-cairn\" does not exist"), "{e}");
    }
}
