//! The errors users meet on S3, and their wording: each names the bucket, the endpoint
//! and the fix (wrong keys, no such bucket, nothing listening, TLS on a plain server,
//! clock skew, wrong region), and a server that sends more than asked for is refused by
//! name. Real S3 servers in-process (s3s-fs), behind the fault proxy where a test needs
//! a server to misbehave.

mod support;

use std::fs;
use support::fault_proxy::Schedule;
use support::s3::S3Server;
use support::{Env, Kind, describe, pseudo_random, restored, walk_files};

#[test]
fn user_mistakes_get_errors_naming_bucket_endpoint_and_fix() {
    let server = S3Server::start(&["backups"]);
    let env = Env::with(Kind::S3);
    let pw = env.password_file.to_str().expect("utf8").to_string();
    let run = |repo: &str, envs: &[(&str, &str)]| {
        let mut c = env.cmd(&[
            "--password-file",
            &pw,
            "-o",
            "s3.retries=2",
            "-o",
            "s3.timeout=2s",
            "init",
        ]);
        c.env("CAIRN_REPOSITORY", repo);
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{repo}: {}", describe(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let ep = server.endpoint();

    let err = run(
        &format!("s3:{ep}/backups/x"),
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")],
    );
    assert!(err.contains("\"backups\"") && err.contains(&ep), "{err}");
    assert!(
        err.contains("credentials") || err.contains("access denied"),
        "{err}"
    );

    let err = run(&format!("s3:{ep}/no-such-bucket/x"), &[]);
    assert!(
        err.contains("no-such-bucket") && err.contains("does not exist"),
        "{err}"
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = run(&format!("s3:http://127.0.0.1:{closed}/backups/x"), &[]);
    assert!(
        err.contains("connection refused") && err.contains(&closed.to_string()),
        "{err}"
    );

    let err = run(
        &format!("s3:https://127.0.0.1:{}/backups/x", server.port),
        &[],
    );
    assert!(err.contains("TLS"), "{err}");
}

#[test]
fn clock_skew_and_wrong_region_answers_say_what_to_fix() {
    let env = Env::with(Kind::S3Proxied);
    let proxy = env.proxy.as_ref().expect("proxy");
    for (status, code, expect) in [
        ("403 Forbidden", "RequestTimeTooSkewed", "clock"),
        (
            "400 Bad Request",
            "AuthorizationHeaderMalformed",
            "s3.region",
        ),
        ("301 Moved Permanently", "PermanentRedirect", "s3.region"),
    ] {
        let mut s = Schedule::clean();
        s.respond = Some((status, code));
        proxy.set_schedule(s);
        let out = env.run(&["init"]);
        assert_eq!(out.status.code(), Some(1), "{code}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect) && err.contains("\"backups\""),
            "{code}: {err}"
        );
    }
}

#[test]
fn a_body_longer_than_asked_for_is_refused_as_it_arrives() {
    let env = Env::with(Kind::S3Proxied);
    env.ok(&["init"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("large"), pseudo_random(6 << 20, 11)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    // Every read of the file's data pack (the largest; trees are read as usual) comes
    // back twice over, chunked, with no declared length: the client only knows it is
    // too long once more bytes arrive than it asked for.
    let data_pack = walk_files(&env.objects_dir().join("data"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).expect("stat").len())
        .and_then(|p| Some(p.file_name()?.to_str()?.to_string()))
        .expect("a data pack");
    let proxy = env.proxy.as_ref().expect("proxy");
    proxy.set_schedule(Schedule {
        overlong: 1000,
        methods: vec!["GET"],
        target_contains: Some(Box::leak(data_pack.into_boxed_str())),
        ..Schedule::clean()
    });
    let target = env.path("t");
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let text = describe(&out);
    assert!(!out.status.success(), "restore succeeded: {text}");
    assert!(
        text.contains("where at most"),
        "the error does not say the body was longer than asked for: {text}"
    );
    assert!(proxy.faults() > 0, "no read was answered twice over");
    // The walk created the file; no byte of a refused read went into it.
    let got = fs::read(restored(&target, &src.join("large"))).expect("the file was created");
    assert!(
        got.is_empty(),
        "{} bytes written from a refused read",
        got.len()
    );
}
