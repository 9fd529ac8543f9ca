//! Tests of the test harness itself (tests/common): the S3 servers that
//! scripts/test.sh starts answer, and the helpers do what they claim.

mod common;

use std::collections::{BTreeMap, HashMap};

use aws_sdk_s3::primitives::ByteStream;
use common::{S3Server, ServerKind};

async fn check_bucket_put_get(server: &S3Server) {
    let bucket = server.new_bucket("smoke put-get").await;
    let client = server.client().await;

    // The bucket exists and is empty.
    client
        .head_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{:?}: HeadBucket {bucket}: {e:?}", server.kind));
    assert!(
        common::bucket_names(&client).await.contains(&bucket),
        "{:?}: {bucket} not in ListBuckets",
        server.kind
    );
    assert_eq!(server.keys(&bucket, "").await, Vec::<String>::new());

    // Binary bodies come back byte for byte, the empty one included.
    let body = common::random_bytes(300 * 1024 + 7);
    server.put(&bucket, "dir/blob.bin", &body).await;
    assert_eq!(server.get(&bucket, "dir/blob.bin").await, body);
    server.put(&bucket, "empty", b"").await;
    assert_eq!(server.get(&bucket, "empty").await, Vec::<u8>::new());

    assert_eq!(server.url(&bucket, "dir/"), format!("s3://{bucket}/dir/"));
}

async fn check_keys_sorted_and_paginated(server: &S3Server) {
    let bucket = server.new_bucket("smoke-keys").await;
    // Put in an order that is not sorted; no key is a "directory" of another
    // (s3s-fs cannot hold both `x` and `x/y`).
    let keys = ["b/2", "a", "b/10", "c/d/e", "b/1", "B", "z-last"];
    for (i, key) in keys.iter().enumerate() {
        server
            .put(&bucket, key, format!("body {i}").as_bytes())
            .await;
    }
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();

    assert_eq!(
        server.keys(&bucket, "").await,
        expected,
        "{:?}",
        server.kind
    );
    // Pages of 2 keys: the paginator must follow continuation tokens.
    assert_eq!(
        server.keys_paged(&bucket, "", Some(2)).await,
        expected,
        "{:?}: paginated listing",
        server.kind
    );
    assert_eq!(
        server.keys_paged(&bucket, "b/", Some(1)).await,
        vec!["b/1", "b/10", "b/2"],
        "{:?}: prefix listing",
        server.kind
    );
    assert_eq!(server.keys(&bucket, "nothing/").await, Vec::<String>::new());
}

async fn check_head_metadata(server: &S3Server) {
    let bucket = server.new_bucket("smoke-meta").await;
    server
        .client()
        .await
        .put_object()
        .bucket(&bucket)
        .key("with-meta")
        .metadata("syncmount-test", "value-1")
        .metadata("other", "2")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("PutObject with metadata");
    let expected: HashMap<String, String> = [
        ("syncmount-test".to_string(), "value-1".to_string()),
        ("other".to_string(), "2".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        server.head_metadata(&bucket, "with-meta").await,
        expected,
        "{:?}",
        server.kind
    );

    server.put(&bucket, "no-meta", b"y").await;
    assert_eq!(
        server.head_metadata(&bucket, "no-meta").await,
        HashMap::new(),
        "{:?}",
        server.kind
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn buckets_objects_round_trip_on_every_server() {
    let servers = common::data_path_servers();
    assert_eq!(
        servers.iter().map(|s| s.kind).collect::<Vec<_>>(),
        vec![ServerKind::Moto, ServerKind::S3sFs]
    );
    for server in &servers {
        check_bucket_put_get(server).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_listed_sorted_across_pages_on_every_server() {
    for server in &common::data_path_servers() {
        check_keys_sorted_and_paginated(server).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_metadata_reads_back_on_every_server() {
    for server in &common::data_path_servers() {
        check_head_metadata(server).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn new_bucket_names_are_unique() {
    let server = common::s3s();
    let a = server.new_bucket("same").await;
    let b = server.new_bucket("same").await;
    assert_ne!(a, b);
    let names = common::bucket_names(&server.client().await).await;
    assert!(names.contains(&a) && names.contains(&b), "{names:?}");
}

#[test]
fn bucket_names_are_valid_for_any_tag() {
    let long = "X".repeat(200);
    let tags = [
        "",
        "a",
        "Upper_Case and spaces",
        "--dashes--",
        "dots.and/slashes",
        "ünïcödé",
        long.as_str(),
    ];
    let mut seen = std::collections::HashSet::new();
    for tag in tags {
        let name = common::unique_bucket_name(tag);
        assert!(
            (3..=63).contains(&name.len()),
            "{tag:?} -> {name:?}: length {}",
            name.len()
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{tag:?} -> {name:?}: bad character"
        );
        assert!(!name.contains("--"), "{tag:?} -> {name:?}");
        let first = name.chars().next().unwrap();
        let last = name.chars().last().unwrap();
        assert!(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric());
        assert!(seen.insert(name.clone()), "duplicate name {name}");
    }
    assert!(common::unique_bucket_name("Upper_Case").starts_with("sm-upper-case-"));
}

/// moto keeps buckets per account: one created through an assumed role in
/// account 222222222222 is listed there and not in the default account.
#[tokio::test(flavor = "multi_thread")]
async fn moto_accounts_have_separate_buckets() {
    let server = common::moto();
    let other = server.account_client("222222222222").await;
    let default = server.client().await;

    let in_other = common::unique_bucket_name("other-account");
    other
        .create_bucket()
        .bucket(&in_other)
        .send()
        .await
        .expect("CreateBucket in account 222222222222");
    let in_default = server.new_bucket("default-account").await;

    let other_names = common::bucket_names(&other).await;
    let default_names = common::bucket_names(&default).await;
    assert!(other_names.contains(&in_other), "{other_names:?}");
    assert!(!other_names.contains(&in_default), "{other_names:?}");
    assert!(default_names.contains(&in_default), "{default_names:?}");
    assert!(!default_names.contains(&in_other), "{default_names:?}");

    // Objects round-trip through the second account's client too.
    other
        .put_object()
        .bucket(&in_other)
        .key("k")
        .body(ByteStream::from_static(b"from 222222222222"))
        .send()
        .await
        .expect("PutObject in account 222222222222");
    let body = other
        .get_object()
        .bucket(&in_other)
        .key("k")
        .send()
        .await
        .expect("GetObject in account 222222222222")
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    assert_eq!(&body[..], b"from 222222222222");

    assert_eq!(
        common::role_arn("222222222222"),
        "arn:aws:iam::222222222222:role/syncmount-test"
    );
    // The env for running the binary as that account carries a session token.
    let env: BTreeMap<String, String> = server
        .account_env("222222222222")
        .await
        .into_iter()
        .collect();
    assert!(env.contains_key("AWS_SESSION_TOKEN"), "{env:?}");
    assert_ne!(env["AWS_ACCESS_KEY_ID"], server.access_key);
}

#[test]
fn syncmount_command_drops_inherited_aws_variables() {
    let server = common::s3s();
    let cmd = common::syncmount_for(&server);
    let envs: BTreeMap<String, Option<String>> = cmd
        .get_envs()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.map(|v| v.to_string_lossy().into_owned()),
            )
        })
        .collect();
    // Every AWS_* variable of this process is either removed or overridden.
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
            assert!(envs.contains_key(&name), "{name} leaks into syncmount");
        }
    }
    for (name, value) in server.env() {
        assert_eq!(envs.get(&name), Some(&Some(value)), "{name}");
    }
    let config_file = envs["AWS_CONFIG_FILE"].clone().unwrap();
    assert!(!std::path::Path::new(&config_file).exists());
    assert!(cmd.get_program().to_string_lossy().ends_with("syncmount"));
}

#[test]
fn run_captures_status_and_both_streams() {
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "echo to-out; echo to-err >&2; exit 3"]);
    let out = common::run(cmd);
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout, "to-out\n");
    assert_eq!(out.stderr, "to-err\n");
}

#[test]
fn write_tree_and_read_tree_round_trip() {
    let dir = common::tempdir();
    let files: &[(&str, &[u8])] = &[
        ("top.txt", b"top"),
        ("a/b/c/deep.bin", &[0, 255, 1, 254]),
        ("a/empty", b""),
        ("space name/ü.txt", "unicode".as_bytes()),
    ];
    common::write_tree(dir.path(), files);
    // An empty directory and a symlink are not regular files: not listed.
    std::fs::create_dir_all(dir.path().join("empty-dir/inner")).unwrap();
    std::os::unix::fs::symlink("top.txt", dir.path().join("link")).unwrap();

    let expected: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(p, b)| (p.to_string(), b.to_vec()))
        .collect();
    assert_eq!(common::read_tree(dir.path()), expected);
}
