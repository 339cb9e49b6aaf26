//! S3 Object Lock against a server that enforces it (`moto_server` from PyPI, which
//! `bash .ci/run` installs): uploads carry the retention, a locked pack cannot be
//! deleted even by a credential that may delete, and prune and forget leave locked
//! objects alone and say when they can go.

use crate::support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{Env, Kind, pseudo_random};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let bin = std::env::var("CAIRN_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {bin} ({e}): install it with `python3 -m pip install 'moto[server]'` (bash .ci/run does), or point CAIRN_MOTO_SERVER at it"
            )
        });
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, port }
}

fn aws(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "t",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[test]
fn locked_objects_survive_deletion_attempts_and_prune_waits_for_them() {
    let server = moto();
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let client = aws(&endpoint);
    rt.block_on(
        client
            .create_bucket()
            .bucket("lockbucket")
            .object_lock_enabled_for_bucket(true)
            .send(),
    )
    .expect("create bucket");

    let mut env = Env::with(Kind::Local);
    env.repo = format!("s3:{endpoint}/lockbucket/repo");
    env.env = vec![
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config".into()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials".into(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_ENDPOINT_URL", String::new()),
        ("AWS_ENDPOINT_URL_S3", String::new()),
        ("AWS_PROFILE", String::new()),
    ];
    env.options = vec!["s3.object-lock=governance:1d".into(), "s3.retries=2".into()];
    env.ok(&["init"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.bin"), pseudo_random(1 << 20, 1)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    std::fs::write(src.join("a.bin"), pseudo_random(1 << 20, 2)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);

    // Every uploaded object carries the retention.
    let listed = rt
        .block_on(
            client
                .list_objects_v2()
                .bucket("lockbucket")
                .prefix("repo/data/")
                .send(),
        )
        .expect("list");
    let packs: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert!(!packs.is_empty());
    for key in &packs {
        let head = rt
            .block_on(client.head_object().bucket("lockbucket").key(key).send())
            .expect("head");
        assert_eq!(
            head.object_lock_mode(),
            Some(&aws_sdk_s3::types::ObjectLockMode::Governance),
            "{key}"
        );
        assert!(head.object_lock_retain_until_date().is_some(), "{key}");
    }

    // A credential that may delete still cannot destroy a locked pack.
    let opts = {
        let mut o = cairn::backend::BackendOptions::default();
        o.apply(&env.options).expect("options");
        o.access_key_id = Some("test".into());
        o.secret_access_key = Some("test".into());
        o.region = Some("us-east-1".into());
        o
    };
    let backend = rt
        .block_on(cairn::backend::open(&env.repo, &opts))
        .expect("backend");
    let name = packs[0].rsplit('/').next().expect("name").to_string();
    let handle = cairn::backend::Handle::new(cairn::backend::FileType::Pack, name);
    assert!(
        rt.block_on(backend.locked_until(&handle))
            .expect("lock")
            .is_some()
    );
    assert!(
        rt.block_on(backend.delete(&handle)).is_err(),
        "deleting a locked pack must fail"
    );
    assert!(
        rt.block_on(backend.stat(&handle)).is_ok(),
        "the pack is still there"
    );

    // forget leaves locked snapshots in place and says until when.
    let out = env.run(&["forget", "--keep-last", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("protected by S3 Object Lock until"));

    // An indexed pack nothing uses (as an interrupted backup leaves): prune condemns it,
    // and the next prune finds it locked and leaves it, saying until when.
    let repo = rt
        .block_on(cairn::repo::Repository::open(
            backend.clone(),
            b"test passphrase",
        ))
        .expect("open");
    let plain = pseudo_random(5000, 77);
    let id = repo.keys().blob_id(&plain);
    let sealed = cairn::pack::seal_blob(
        repo.keys(),
        id,
        cairn::format::index::BlobKind::Data,
        &plain,
        cairn::compression::Compression::AUTO,
    )
    .expect("seal");
    let mut builder = cairn::pack::PackBuilder::default();
    builder.add(sealed);
    let pack = builder
        .finish(repo.keys(), repo.config().version)
        .expect("pack");
    let orphan = cairn::backend::Handle::new(cairn::backend::FileType::Pack, pack.id.to_hex());
    rt.block_on(backend.put(&orphan, pack.bytes)).expect("put");
    rt.block_on(repo.save_index(vec![pack.index]))
        .expect("index");
    let out = env.ok(&["prune", "--grace", "0s", "--json"]);
    let r = support::json_lines(&out)
        .expect("json")
        .pop()
        .expect("summary");
    assert!(r["condemned_packs"].as_u64() >= Some(1), "{r}");
    let out = env.ok(&["prune", "--grace", "0s", "--json"]);
    let r = support::json_lines(&out)
        .expect("json")
        .pop()
        .expect("summary");
    assert_eq!(r["deleted_packs"], 0, "{r}");
    assert!(r["locked_packs"].as_u64() >= Some(1), "{r}");
    assert!(r["next_unlock"].is_string(), "{r}");
    assert!(
        rt.block_on(backend.stat(&orphan)).is_ok(),
        "the locked pack stays"
    );

    // Needed objects get their lock pushed out again (prune does it, as the daemon does).
    let until = |key: &str| {
        rt.block_on(client.head_object().bucket("lockbucket").key(key).send())
            .expect("head")
            .object_lock_retain_until_date()
            .copied()
            .expect("retention")
    };
    let before = until(&packs[0]);
    std::thread::sleep(Duration::from_millis(1100));
    env.ok(&["prune", "--grace", "0s"]);
    assert!(
        until(&packs[0]) > before,
        "the lock of a needed pack was extended"
    );

    let out = env.run(&["check", "--read-data"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    env.restore_latest_and_compare(&src, "restored");
}
