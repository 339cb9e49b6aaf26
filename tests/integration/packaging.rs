//! The Debian package and its systemd unit: the unit passes `systemd-analyze verify`
//! (with the built `cairn` in place of /usr/bin/cairn), and the package metadata in
//! Cargo.toml (cargo-deb's format) agrees with the files that exist and with the unit:
//! every asset is there, the unit is declared through cargo-deb's systemd support without
//! being enabled or started, the environment file it reads is shipped private, and the
//! cache it declares is the example configuration's.
//!
//! Without `systemd-analyze` the verification is skipped with a message, unless `CI` is
//! set: there it must run (`.ci/run` installs it).

use std::path::Path;
use std::process::Command;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(manifest_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `[package.metadata.deb]` of Cargo.toml.
fn deb_metadata() -> toml::Table {
    let cargo: toml::Table = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml");
    cargo["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// The `[Service]` settings of the unit named `key`, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Ok(found) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but systemd-analyze is missing: install the `systemd` package (.ci/run does)"
        );
        eprintln!(
            "SKIPPED: systemd-analyze is not installed (Debian package `systemd`); the unit was not verified"
        );
        return;
    };
    assert!(found.status.success(), "systemd-analyze --version failed");
    let unit =
        read("packaging/cairn.service").replace("/usr/bin/cairn", env!("CARGO_BIN_EXE_cairn"));
    if let Err(report) = verify(&unit) {
        panic!("systemd-analyze verify finds fault with packaging/cairn.service: {report}");
    }
    // The check can fail: a unit with a mistake in it is reported.
    let broken = unit.replace("Type=notify", "Type=notifyy");
    assert!(
        verify(&broken).is_err(),
        "a broken unit passed verification"
    );
}

/// `systemd-analyze verify` on `unit` written as `cairn.service`: what it says about it,
/// if anything. Warnings about the host's own units (a container lacks some) are not the
/// unit's; any line naming cairn.service is.
fn verify(unit: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cairn.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && !stderr.lines().any(|l| l.contains("cairn.service")) {
        Ok(())
    } else {
        Err(format!("exit {:?}:\n{stderr}", out.status.code()))
    }
}

#[test]
fn the_package_metadata_matches_the_files_and_the_unit() {
    let deb = deb_metadata();
    // Every asset that is not built (target/...) exists, with a mode.
    let assets = deb["assets"].as_array().expect("assets");
    let mut installed = Vec::new();
    for a in assets {
        let a = a.as_array().expect("asset triple");
        let (src, dest, mode) = (
            a[0].as_str().expect("source"),
            a[1].as_str().expect("destination"),
            a[2].as_str().expect("mode"),
        );
        assert!(
            u32::from_str_radix(mode, 8).is_ok(),
            "asset {src}: mode {mode}"
        );
        if !src.starts_with("target/") {
            assert!(
                manifest_dir().join(src).is_file(),
                "asset {src} does not exist"
            );
        }
        installed.push((src.to_string(), dest.to_string(), mode.to_string()));
    }
    // Conffiles are installed files.
    for c in deb["conf-files"].as_array().expect("conf-files") {
        let c = c.as_str().expect("path");
        assert!(
            installed.iter().any(|(_, d, _)| format!("/{d}") == c),
            "conf-file {c} is not an asset's destination"
        );
    }
    // The unit comes through cargo-deb's systemd support: installed, daemon-reload, not
    // enabled, not started; the maintainer scripts hold the token it fills in.
    let units = deb["systemd-units"].as_table().expect("systemd-units");
    assert_eq!(units.get("enable").and_then(|v| v.as_bool()), Some(false));
    assert_eq!(units.get("start").and_then(|v| v.as_bool()), Some(false));
    let unit_dir = units["unit-scripts"].as_str().expect("unit-scripts");
    assert!(
        manifest_dir()
            .join(unit_dir)
            .join("cairn.service")
            .is_file()
    );
    assert!(
        !installed
            .iter()
            .any(|(s, _, _)| s.ends_with("cairn.service")),
        "the unit is installed by systemd-units, not as a plain asset"
    );
    let scripts = manifest_dir().join(
        deb["maintainer-scripts"]
            .as_str()
            .expect("maintainer-scripts"),
    );
    let mut seen = 0;
    for e in std::fs::read_dir(&scripts).expect("maintainer-scripts dir") {
        let text = std::fs::read_to_string(e.expect("entry").path()).expect("script");
        assert!(
            text.contains("#DEBHELPER#"),
            "a maintainer script lacks #DEBHELPER#"
        );
        seen += 1;
    }
    assert!(
        seen > 0,
        "maintainer-scripts is empty (git keeps no empty folder)"
    );

    let unit = read("packaging/cairn.service");
    // Credentials come from an optional environment file, shipped private.
    assert_eq!(
        unit_values(&unit, "EnvironmentFile"),
        ["-/etc/cairn/cairn.env"]
    );
    assert!(
        installed.iter().any(|(s, d, m)| s == "packaging/cairn.env"
            && d == "etc/cairn/cairn.env"
            && m == "600"),
        "cairn.env must be installed as /etc/cairn/cairn.env, mode 600"
    );
    // cairn reads the passphrase itself, so a missing file gets cairn's message, not a
    // credential failure of systemd's.
    assert!(unit_values(&unit, "LoadCredential").is_empty());
    assert!(
        unit_values(&unit, "ExecStartPre")
            .iter()
            .any(|c| c.contains("cairn config check --offline")),
        "{unit}"
    );
    // The cache the unit declares is the example configuration's cache_dir.
    assert_eq!(unit_values(&unit, "CacheDirectory"), ["cairn"]);
    assert!(
        read("config/cairn.toml")
            .lines()
            .any(|l| l.trim() == "cache_dir = \"/var/cache/cairn\""),
        "config/cairn.toml must set cache_dir = \"/var/cache/cairn\" (CacheDirectory=cairn)"
    );
    assert_eq!(unit_values(&unit, "StateDirectory"), ["cairn"]);
    assert!(read("config/cairn.toml").contains("state_dir = \"/var/lib/cairn\""));
    // /etc/cairn holds the passphrase: tmpfiles makes it private.
    let tmpfiles = read("packaging/cairn.tmpfiles");
    assert!(
        tmpfiles
            .lines()
            .any(|l| l.starts_with("d /etc/cairn 0700 root root")),
        "{tmpfiles}"
    );
}
