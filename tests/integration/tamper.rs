//! Nothing stored is trusted: a flipped byte in any object, or a hostile tree, makes
//! restore fail loudly on what it touches, naming the object, and never write outside the
//! target.

use crate::support;

use cairn::backend::local::LocalBackend;
use cairn::backend::{Backend, FileType, Handle};
use cairn::compression::Compression;
use cairn::format::index::BlobKind;
use cairn::format::name::ByteName;
use cairn::format::tree::{NodeKind, Tree};
use cairn::pack::{PackBuilder, seal_blob};
use cairn::repo::Repository;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support::fixtures::{node, snapshot};
use support::{Env, copy_dir, describe, pseudo_random};

fn objects(root: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(root).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            objects(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn flipped_byte_in_any_object_fails_restore_and_names_it() {
    let env = Env::new();
    env.ok(&["init", "--pack-size", "1"]);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..4u64 {
        fs::write(src.join(format!("f{i}")), pseudo_random(1_500_000, i + 1)).expect("write");
    }
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let repo = PathBuf::from(&env.repo);
    let mut all = Vec::new();
    objects(&repo, &mut all);
    // config, key, index, snapshot and the packs checked below. How the blobs fall into
    // packs depends on which reader finishes first, so the pack count is a lower bound.
    assert!(all.len() >= 7, "expected several objects, got {all:?}");
    let data_packs = all
        .iter()
        .filter(|p| p.starts_with(repo.join("data")))
        .count();
    assert!(data_packs >= 3, "want several packs, got {data_packs}");

    for (n, object) in all.iter().enumerate() {
        let rel = object
            .strip_prefix(&repo)
            .expect("inside repo")
            .to_path_buf();
        let copy = env.path(&format!("copy{n}"));
        copy_dir(&repo, &copy);
        let victim = copy.join(&rel);
        let mut bytes = fs::read(&victim).expect("read");
        // Inside the first blob for packs (restore reads blobs, not pack headers);
        // the middle for every other object.
        let at = if rel.starts_with("data") {
            100
        } else {
            bytes.len() / 2
        };
        bytes[at] ^= 0x04;
        fs::write(&victim, &bytes).expect("write");

        let target = env.path(&format!("target{n}"));
        let out = env
            .cmd(&[
                "restore",
                "latest",
                "--target",
                target.to_str().expect("utf8"),
            ])
            .env("CAIRN_REPOSITORY", &copy)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(0),
            "flip in {} went unnoticed: {}",
            rel.display(),
            describe(&out)
        );
        let name = rel
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let named = if rel == Path::new("config") {
            err.contains("config")
        } else if rel.starts_with("keys") {
            err.contains("keys/")
        } else {
            err.contains(&name[..8])
        };
        assert!(named, "error for {} does not name it: {err}", rel.display());
        if rel.starts_with("data") && err.contains("could not be restored") {
            // Only the entries that need the damaged pack fail.
            let failed = err.lines().filter(|l| l.starts_with("  ")).count();
            assert!(
                failed < 4,
                "one damaged pack failed {failed} entries: {err}"
            );
        }
    }
}

/// Write a snapshot whose root tree is `tree` (bypassing validation, as an attacker would).
async fn plant(repo: &Repository, tree: &Tree, payload: &[u8]) -> String {
    let keys = repo.keys();
    let mut pack = PackBuilder::default();
    pack.add(
        seal_blob(
            keys,
            keys.blob_id(payload),
            BlobKind::Data,
            payload,
            Compression::AUTO,
        )
        .expect("seal"),
    );
    let plain = tree.to_plain();
    pack.add(
        seal_blob(
            keys,
            keys.blob_id(&plain),
            BlobKind::Tree,
            &plain,
            Compression::AUTO,
        )
        .expect("seal"),
    );
    let done = pack.finish(keys, repo.config().version).expect("finish");
    repo.backend()
        .put(&Handle::new(FileType::Pack, done.id.to_hex()), done.bytes)
        .await
        .expect("put");
    repo.save_index(vec![done.index]).await.expect("index");
    let snap = snapshot(keys.blob_id(&plain));
    repo.save_snapshot(&snap).await.expect("snapshot").to_hex()
}

#[test]
fn tree_names_that_escape_the_target_are_refused() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for (label, bad) in [
        ("dotdot", b"..".as_slice()),
        ("slash", b"../../escaped".as_slice()),
        ("empty", b"".as_slice()),
        ("dot", b".".as_slice()),
    ] {
        let env = Env::init();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&env.repo));
        let repo = rt
            .block_on(Repository::open(backend, b"test passphrase"))
            .expect("open");
        let payload = b"written where it must not be".to_vec();
        let mut evil = node(bad, NodeKind::File);
        evil.content = vec![repo.keys().blob_id(&payload)];
        evil.size = payload.len() as u64;
        let id = rt.block_on(plant(&repo, &Tree { nodes: vec![evil] }, &payload));

        let target = env.path("deep/down/target");
        let out = env.run(&["restore", &id, "--target", target.to_str().expect("utf8")]);
        assert_ne!(out.status.code(), Some(0), "{label}: {}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("tree") && err.contains("entry name"),
            "{label}: {err}"
        );
        assert!(!env.path("deep/escaped").exists() && !env.path("escaped").exists());
    }
}

#[test]
fn duplicate_names_cannot_smuggle_a_symlink_under_a_directory() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let env = Env::init();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&env.repo));
    let repo = rt
        .block_on(Repository::open(backend, b"test passphrase"))
        .expect("open");
    let mut link = node(b"a", NodeKind::Symlink);
    link.link_target = Some(ByteName(b"/".to_vec()));
    let mut dir = node(b"a", NodeKind::Dir);
    dir.subtree = Some(repo.keys().blob_id(b"{}"));
    let id = rt.block_on(plant(
        &repo,
        &Tree {
            nodes: vec![link, dir],
        },
        b"x",
    ));
    let target = env.path("target");
    let out = env.run(&["restore", &id, "--target", target.to_str().expect("utf8")]);
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("duplicated"),
        "{}",
        describe(&out)
    );
}

#[test]
fn flipped_byte_in_a_bucket_object_is_named_over_s3() {
    let env = Env::init_on(support::Kind::S3);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), pseudo_random(2_000_000, 3)).expect("write");
    env.ok(&["backup", src.to_str().expect("utf8")]);
    let mut all = Vec::new();
    objects(&env.objects_dir().join("data"), &mut all);
    let pack = all
        .iter()
        .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .expect("a data pack");
    let mut bytes = fs::read(pack).expect("read");
    bytes[1000] ^= 0x80;
    fs::write(pack, &bytes).expect("write");
    let target = env.path("t");
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let name = pack
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&name) && err.contains("damaged"), "{err}");
}
