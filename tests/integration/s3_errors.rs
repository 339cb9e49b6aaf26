//! The errors users meet on S3, and their wording: each names the bucket, the endpoint
//! and the fix (wrong keys, no such bucket, nothing listening, TLS on a plain server,
//! clock skew, wrong region), and a server that sends more than asked for is refused by
//! name. Real S3 servers in-process (s3s-fs), behind the fault proxy where a test needs
//! a server to misbehave.

use crate::support;

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

/// `init` against `repo` with the S3 server's keys (changed by `envs`), a short timeout
/// and two attempts; it must fail with 1. Returns stderr.
fn init_fails(env: &Env, repo: &str, envs: &[(&str, &str)]) -> String {
    let mut c = env.cmd(&["-o", "s3.retries=2", "-o", "s3.timeout=3s", "init"]);
    c.env("CAIRN_REPOSITORY", repo);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{repo}: {}", describe(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// No SDK or hyper debug structure reached the user.
fn assert_plain(err: &str) {
    for debug in [
        "DispatchFailure",
        "ConnectorError",
        "Some(",
        "{ ",
        "Kind(",
        "Error {",
    ] {
        assert!(
            !err.contains(debug),
            "a debug structure ({debug:?}) reached the user: {err}"
        );
    }
}

#[test]
fn a_wrong_port_or_a_reset_connection_says_what_was_tried_and_what_to_check() {
    // Nothing listens on the port.
    let env = Env::with(Kind::S3);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let ep = format!("http://127.0.0.1:{closed}");
    let err = init_fails(&env, &format!("s3:{ep}/backups/x"), &[]);
    assert!(
        err.contains("\"backups\"") && err.contains(&ep) && err.contains("connection refused"),
        "{err}"
    );
    assert!(err.contains("the endpoint's port is right"), "{err}");
    assert_plain(&err);

    // Something listens, but resets every connection without answering.
    let env = Env::with(Kind::S3Proxied);
    let proxy = env.proxy.as_ref().expect("proxy");
    proxy.set_schedule(Schedule {
        reset: 1000,
        ..Schedule::clean()
    });
    let err = init_fails(&env, &env.repo, &[]);
    assert!(proxy.faults() > 0, "the proxy reset nothing");
    assert!(
        err.contains("\"backups\"")
            && err.contains(&proxy.endpoint())
            && err.contains("closed the connection before answering"),
        "{err}"
    );
    assert!(err.contains("http:// or https://"), "{err}");
    assert_plain(&err);
}

#[test]
fn a_wrong_secret_or_an_unknown_key_is_named_with_where_it_came_from() {
    let env = Env::with(Kind::S3);
    let err = init_fails(
        &env,
        &env.repo,
        &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")],
    );
    assert!(
        err.contains("the secret access key is wrong")
            && err.contains("AWS_SECRET_ACCESS_KEY in the environment"),
        "{err}"
    );
    assert_plain(&err);

    let err = init_fails(&env, &env.repo, &[("AWS_ACCESS_KEY_ID", "nobody")]);
    assert!(
        err.contains("does not know the access key id")
            && err.contains("AWS_ACCESS_KEY_ID in the environment"),
        "{err}"
    );
    assert_plain(&err);
}

/// A server that answers every request with `answer` (a whole HTTP response, its body
/// left out for a HEAD), as an S3 region in another place does: the fault proxy's
/// canned answers carry no region. Runs until the test process ends.
fn answering(answer: &'static str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn);
            let mut head = Vec::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                head.push(std::mem::take(&mut line));
            }
            let length = head
                .iter()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let _ = std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink());
            let answer = if head.first().is_some_and(|l| l.starts_with("HEAD ")) {
                answer.split("\r\n\r\n").next().unwrap_or("").to_string() + "\r\n\r\n"
            } else {
                answer.to_string()
            };
            let mut conn = reader.into_inner();
            let _ = conn.write_all(answer.as_bytes());
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// An HTTP response with an S3 error body.
fn s3_answer(status: &str, headers: &str, body: &str) -> &'static str {
    Box::leak(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    )
}

#[test]
fn a_region_error_names_the_region_the_server_asked_for() {
    let env = Env::with(Kind::S3);
    let malformed = s3_answer(
        "400 Bad Request",
        "",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-3'</Message><Region>eu-west-3</Region></Error>",
    );
    let redirect = s3_answer(
        "301 Moved Permanently",
        "x-amz-bucket-region: eu-west-3\r\n",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint.</Message></Error>",
    );
    for answer in [malformed, redirect] {
        let ep = answering(answer);
        let err = init_fails(&env, &format!("s3:{ep}/backups/x"), &[]);
        assert!(
            err.contains("\"backups\"")
                && err.contains("is in region eu-west-3, not us-east-1")
                && err.contains("-o s3.region=eu-west-3"),
            "{err}"
        );
        assert_plain(&err);
    }
}
