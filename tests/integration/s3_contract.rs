//! The S3 backend's storage contract on real S3 servers (in-process s3s-fs over HTTP and
//! HTTPS), directly and behind the fault-injecting proxy: the written contract of
//! [`Backend`] on every backend, retries through injected faults, multipart uploads,
//! bodies damaged in transit, and TLS with a CA of one's own. The errors users meet are
//! in `s3_errors.rs`; how many requests each command makes, in `s3_requests.rs` and
//! `s3_in_flight.rs`.

use crate::support;

use bytes::Bytes;
use cairn::backend::{Backend, BackendError, BackendOptions, FileType, Handle};
use std::fs;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::fault_proxy::{FaultProxy, Schedule};
use support::s3::{S3Server, backend_options};
use support::{Env, Kind, assert_same_tree, describe, pseudo_random, restored};

/// Backend options for the test servers: quick retries and short timeouts, then `extra`.
fn options(extra: &[&str]) -> BackendOptions {
    let mut all = vec![
        "s3.retry-delay=10ms".to_string(),
        "s3.timeout=3s".to_string(),
    ];
    all.extend(extra.iter().map(|s| s.to_string()));
    backend_options(&all)
}

/// Open the backend `spec` names, as `cairn` would.
async fn open(spec: &str, opts: &BackendOptions) -> Arc<dyn Backend> {
    cairn::backend::open(spec, opts)
        .await
        .expect("open backend")
}

/// The written contract of [`Backend`], checked the same way on every backend.
async fn contract(b: Arc<dyn Backend>) {
    // `config` first: a local directory takes content objects only into a repository.
    assert!(b.list(FileType::Config).await.expect("list").is_empty());
    b.put(&Handle::config(), Bytes::from_static(b"{}"))
        .await
        .expect("put");
    assert_eq!(b.list(FileType::Config).await.expect("list").len(), 1);
    let pack = Handle::new(FileType::Pack, "ab".to_string() + &"0".repeat(62));
    let data = Bytes::from(pseudo_random(300_000, 9));
    b.put(&pack, data.clone()).await.expect("put");
    assert_eq!(b.get(&pack).await.expect("get"), data.to_vec());
    assert_eq!(
        b.get_range(&pack, 1000, 5000).await.expect("range"),
        data[1000..6000].to_vec()
    );
    // A buffer handed back holds exactly the new range, whatever it held before, longer
    // or shorter.
    for stale in [vec![7u8; 20_000], vec![7u8; 10]] {
        assert_eq!(
            b.get_range_into(&pack, 2000, 3000, stale)
                .await
                .expect("range into"),
            data[2000..5000].to_vec()
        );
    }
    assert_eq!(b.stat(&pack).await.expect("stat"), data.len() as u64);
    let past_end = b.get_range(&pack, 299_990, 100).await;
    assert!(
        past_end.is_err(),
        "a short range must be an error, got {past_end:?}"
    );

    let snap = Handle::new(FileType::Snapshot, "cd".repeat(32));
    b.put(&snap, Bytes::from_static(b"snapshot"))
        .await
        .expect("put");
    let packs = b.list(FileType::Pack).await.expect("list");
    assert_eq!(packs.len(), 1);
    assert_eq!(packs[0].name, pack.name);
    assert_eq!(packs[0].size, data.len() as u64);
    let snaps = b.list(FileType::Snapshot).await.expect("list");
    assert_eq!(
        snaps.iter().map(|o| o.name.clone()).collect::<Vec<_>>(),
        vec![snap.name.clone()]
    );
    assert!(b.list(FileType::Index).await.expect("list").is_empty());

    let missing = Handle::new(FileType::Index, "ef".repeat(32));
    match b.get(&missing).await {
        Err(e) => assert!(e.is_not_found(), "missing object: {e}"),
        Ok(_) => panic!("missing object was returned"),
    }
    b.delete(&snap).await.expect("delete");
    assert!(
        b.get(&snap)
            .await
            .is_err_and(|e: BackendError| e.is_not_found())
    );
    b.delete(&snap)
        .await
        .expect("deleting an absent object is fine");

    // Large enough for multipart when the threshold is lowered.
    let big_handle = Handle::new(FileType::Pack, "ff".repeat(32));
    let big = Bytes::from(pseudo_random(11 << 20, 4));
    b.put(&big_handle, big.clone()).await.expect("put big");
    assert_eq!(b.get(&big_handle).await.expect("get big"), big.to_vec());
}

#[test]
fn backend_contract_holds_for_local_s3_and_faulty_s3() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let local = dir.path().to_str().expect("utf8").to_string();
    rt.block_on(async { contract(open(&local, &options(&[])).await).await });

    let server = S3Server::start(&["bucket"]);
    let opts = options(&["s3.multipart-threshold=5MiB", "s3.part-size=5MiB"]);
    let spec = format!("s3:{}/bucket/direct", server.endpoint());
    rt.block_on(async { contract(open(&spec, &opts).await).await });

    for seed in [11u64, 12, 13] {
        let proxy = FaultProxy::start(server.port, Schedule::all(seed, 40, Duration::from_secs(5)));
        let opts = options(&[
            "s3.multipart-threshold=5MiB",
            "s3.part-size=5MiB",
            "s3.retries=12",
            "s3.timeout=1s",
        ]);
        let spec = format!("s3:{}/bucket/faulty{seed}", proxy.endpoint());
        rt.block_on(async { contract(open(&spec, &opts).await).await });
        println!("seed {seed}: {} faults injected", proxy.faults());
        assert!(proxy.faults() > 0, "seed {seed} injected nothing");
    }
}

#[test]
fn backup_and_restore_survive_injected_faults() {
    for seed in [1u64, 2] {
        let env = Env::with(Kind::S3Proxied);
        env.ok(&["init", "--pack-size", "1"]);
        let src = env.path("src");
        fs::create_dir_all(src.join("d")).expect("mkdir");
        for i in 0..6u64 {
            fs::write(
                src.join(format!("d/f{i}")),
                pseudo_random(700_000, i + seed),
            )
            .expect("write");
        }
        let proxy = env.proxy.as_ref().expect("proxy");
        proxy.set_schedule(Schedule::all(seed, 30, Duration::from_secs(8)));
        let out = env.run(&["backup", src.to_str().expect("utf8")]);
        assert!(out.status.success(), "seed {seed}: {}", describe(&out));
        let target = env.path("t");
        let out = env.run(&[
            "restore",
            "latest",
            "--target",
            target.to_str().expect("utf8"),
        ]);
        assert!(out.status.success(), "seed {seed}: {}", describe(&out));
        assert_same_tree(&src, &restored(&target, &src));
        assert!(proxy.faults() > 0, "seed {seed} injected no fault");
        println!(
            "seed {seed}: {} faults in {} requests",
            proxy.faults(),
            proxy.stats.requests.load(Ordering::Relaxed)
        );
    }
}

#[test]
fn persistent_failure_fails_backup_and_commits_nothing() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), pseudo_random(100_000, 1)).expect("write");
    let proxy = env.proxy.as_ref().expect("proxy");
    let mut always = Schedule::clean();
    always.error500 = 1000;
    always.methods = vec!["PUT"];
    proxy.set_schedule(always);
    let out = env.run(&["-o", "s3.retries=3", "backup", src.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("500") && err.contains("\"backups\""), "{err}");
    proxy.set_schedule(Schedule::clean());
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    assert_eq!(list.as_array().expect("array").len(), 0);
    env.ok(&["backup", src.to_str().expect("utf8")]);
}

#[test]
fn multipart_uploads_round_trip_and_failed_ones_are_aborted() {
    let env = Env::with(Kind::S3Proxied);
    let mp = [
        "-o",
        "s3.multipart-threshold=5MiB",
        "-o",
        "s3.part-size=5MiB",
    ];
    let with = |args: &[&str]| {
        let mut all: Vec<&str> = mp.to_vec();
        all.extend_from_slice(args);
        env.run(&all)
    };
    assert!(with(&["init", "--pack-size", "12"]).status.success());
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("big"), pseudo_random(30 << 20, 5)).expect("write");

    // Every CompleteMultipartUpload fails: the parts must be cleaned up.
    let proxy = env.proxy.as_ref().expect("proxy");
    let mut fail_complete = Schedule::clean();
    fail_complete.error500 = 1000;
    fail_complete.methods = vec!["POST"];
    fail_complete.target_contains = Some("uploadId=");
    proxy.set_schedule(fail_complete);
    let out = with(&["-o", "s3.retries=2", "backup", src.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let server_root = env.server.as_ref().expect("server").root().to_path_buf();
    let leftovers: Vec<_> = fs::read_dir(&server_root)
        .expect("root")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "parts of aborted uploads remain: {leftovers:?}"
    );

    proxy.set_schedule(Schedule::clean());
    let out = with(&["backup", src.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", describe(&out));
    env.restore_latest_and_compare(&src, "t");
}

/// A self-hosted server with a certificate from its own CA: cairn reaches it through
/// `s3.ca-bundle` alone (without it, the error names the certificate and the option), and
/// over HTTPS sends upload bodies as `UNSIGNED-PAYLOAD`, single and multipart, since TLS
/// already guards them; over plain HTTP every upload's body hash is signed.
#[test]
fn https_with_its_own_ca_works_through_ca_bundle_and_leaves_body_hashing_to_tls() {
    let src_dir = tempfile::tempdir().expect("tmp");
    let src = src_dir.path().join("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("big"), pseudo_random(14 << 20, 21)).expect("write");
    fs::write(src.join("sub/small"), b"small file\n").expect("write");
    let mp = [
        "-o",
        "s3.multipart-threshold=5MiB",
        "-o",
        "s3.part-size=5MiB",
    ];
    let puts = |server: &S3Server| -> Vec<(String, String)> {
        server
            .seen()
            .into_iter()
            .filter(|r| r.method == "PUT")
            .map(|r| (r.target, r.content_sha256))
            .collect()
    };

    let tls = Env::with(Kind::S3Tls);
    let server = tls.server.as_ref().expect("server");
    assert!(tls.repo.starts_with("s3:https://"), "{}", tls.repo);
    let run = |args: &[&str]| tls.run_with(&mp, args);
    let out = run(&["init", "--pack-size", "12"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(&["backup", src.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", describe(&out));
    tls.restore_latest_and_compare(&src, "restored");
    let sent = puts(server);
    assert!(
        sent.iter().any(|(t, _)| t.contains("partNumber=")),
        "no multipart upload: {sent:?}"
    );
    for (target, hash) in &sent {
        assert_eq!(hash, "UNSIGNED-PAYLOAD", "PUT {target} over HTTPS");
    }

    // Without the CA bundle the server's certificate is refused, and the error says how
    // to trust it.
    let mut bare = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    for (k, v) in support::s3::aws_env() {
        if v.is_empty() {
            bare.env_remove(k);
        } else {
            bare.env(k, v);
        }
    }
    let out = bare
        .env("CAIRN_CACHE_DIR", tls.path("bare-cache"))
        .env("CAIRN_REPOSITORY", &tls.repo)
        .env("CAIRN_PASSWORD_FILE", &tls.password_file)
        .args(["-o", "s3.retries=1", "snapshots"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cairn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        err.contains("certificate") && err.contains("s3.ca-bundle"),
        "{err}"
    );

    let signed = |sent: &[(String, String)], how: &str| {
        assert!(sent.iter().any(|(t, _)| t.contains("partNumber=")), "{how}");
        for (target, hash) in sent {
            assert!(
                hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "PUT {target} {how} carries {hash:?}"
            );
        }
    };

    // `s3.sign-payload=always`, for TLS that ends at a proxy: signed over HTTPS too.
    server.seen.lock().expect("seen").clear();
    fs::write(src.join("big"), pseudo_random(14 << 20, 22)).expect("write");
    let out = run(&[
        "-o",
        "s3.sign-payload=always",
        "backup",
        src.to_str().expect("utf8"),
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    signed(&puts(server), "over HTTPS with s3.sign-payload=always");

    // Plain HTTP: every upload signs its body's SHA-256, also where the SDK adds a CRC32
    // of the body (which s3s-fs does not check; see the damaged-body test).
    let mut plain = Env::with(Kind::S3);
    plain.options.push("s3.checksum=when-supported".into());
    let run = |args: &[&str]| plain.run_with(&mp, args);
    let out = run(&["init", "--pack-size", "12"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(&["backup", src.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", describe(&out));
    let plain_server = plain.server.as_ref().expect("server");
    signed(&puts(plain_server), "over HTTP");

    // The same server named only in the AWS profile (`endpoint_url`), no endpoint in the
    // repository: addressed path-style as any endpoint of one's own, the scheme read from
    // the request itself, and the bodies signed.
    let profile = plain.path("aws-config");
    // A host name, not an IP address: the SDK addresses an IP path-style by itself.
    let endpoint = format!("http://localhost:{}", plain_server.port);
    let config = format!("[default]\nendpoint_url = {endpoint}\n");
    fs::write(&profile, config).expect("write profile");
    let mut via_profile = Env::with(Kind::Local);
    via_profile.repo = "s3://backups/via-profile".into();
    via_profile.env = support::s3::aws_env()
        .into_iter()
        .map(|(k, v)| match k {
            "AWS_CONFIG_FILE" => (k, profile.to_string_lossy().into_owned()),
            _ => (k, v),
        })
        .collect();
    plain_server.seen.lock().expect("seen").clear();
    let run = |args: &[&str]| via_profile.run_with(&mp, args);
    let out = run(&["init", "--pack-size", "12"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(&["backup", src.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", describe(&out));
    let sent = puts(plain_server);
    assert!(
        sent.iter()
            .all(|(t, _)| t.contains("/backups/via-profile/")),
        "{sent:?}"
    );
    signed(&sent, "over HTTP from the profile's endpoint_url");
}

/// Upload bodies damaged on the way to the server (one bit flipped, single and multipart):
/// the server refuses each by its checksum, cairn sends it again, and what the bucket keeps
/// restores byte for byte and passes a full read check. Also with `s3.checksum=when-supported`:
/// the SDK's CRC32 is no substitute for the signed SHA-256 over plain HTTP, since s3s-fs
/// stores a body whose CRC32 disagrees (dropping the SHA-256 there failed this test).
#[test]
fn a_body_damaged_on_the_way_to_the_server_is_refused_there_and_sent_again() {
    damaged_bodies_are_sent_again("when-required");
    damaged_bodies_are_sent_again("when-supported");
}

fn damaged_bodies_are_sent_again(checksum: &str) {
    let env = Env::with(Kind::S3Proxied);
    let checksum = format!("s3.checksum={checksum}");
    let mp = [
        "-o",
        "s3.multipart-threshold=5MiB",
        "-o",
        "s3.part-size=5MiB",
        "-o",
        &checksum,
    ];
    let run = |args: &[&str]| env.run_with(&mp, args);
    let out = run(&["init", "--pack-size", "12"]);
    assert!(out.status.success(), "{}", describe(&out));
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).expect("mkdir");
    fs::write(src.join("big"), pseudo_random(20 << 20, 31)).expect("write");
    for i in 0..40u64 {
        fs::write(
            src.join(format!("docs/{i}.txt")),
            pseudo_random(3000 + 500 * i as usize, i),
        )
        .expect("write");
    }
    let proxy = env.proxy.as_ref().expect("proxy");
    proxy.set_schedule(Schedule {
        seed: 41,
        corrupt_body: 300,
        methods: vec!["PUT"],
        ..Schedule::clean()
    });
    let out = run(&["backup", src.to_str().expect("utf8")]);
    assert!(out.status.success(), "{}", describe(&out));
    let damaged = proxy.faults();
    assert!(damaged > 0, "no body was damaged");
    proxy.set_schedule(Schedule::clean());
    env.restore_latest_and_compare(&src, "t");
    let out = run(&["check", "--read-data"]);
    assert!(out.status.success(), "{}", describe(&out));
    println!("{damaged} upload bodies damaged in transit");

    // AWS and MinIO answer such a body with 400 XAmzContentSHA256Mismatch (BadDigest when
    // a checksum disagrees): the body did not arrive as sent, which sending it again
    // fixes, so these are retried like a 500 and not reported as a mistake to fix.
    for (seed, code) in [(43, "XAmzContentSHA256Mismatch"), (44, "BadDigest")] {
        fs::write(src.join("big"), pseudo_random(20 << 20, seed)).expect("write");
        proxy.set_schedule(Schedule {
            seed,
            respond: Some(("400 Bad Request", code)),
            respond_rate: 300,
            methods: vec!["PUT"],
            ..Schedule::clean()
        });
        let before = proxy.faults();
        let out = run(&["backup", src.to_str().expect("utf8")]);
        assert!(out.status.success(), "{code}: {}", describe(&out));
        assert!(
            proxy.faults() > before,
            "{code}: no request was answered so"
        );
    }
    proxy.set_schedule(Schedule::clean());
    env.restore_latest_and_compare(&src, "t2");
}
