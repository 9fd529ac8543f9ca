//! The one-way mass-delete guard: with `--preserve-deleted-files remove`, an
//! execution that would delete more of the destination than `--max-delete`
//! allows (default 50%), or whose source lists nothing while the
//! destination holds keys, deletes nothing and ends in ERROR naming the
//! numbers; copies still happen; `--force` (a task: `--override
//! force=true`) lets a deliberate mass delete through.

mod common;

use common::tasks::{status, TaskEnv};
use common::{counter, path_str, read_tree, sync_json, sync_ok, write_tree};
use serde_json::Value;

/// A source with `keep` of the ten files `f0.txt`..`f9.txt` (the first
/// ones) and `new.txt`, and a destination that holds all ten.
fn trees(keep: usize) -> (tempfile::TempDir, tempfile::TempDir) {
    let (src, dst) = (common::tempdir(), common::tempdir());
    let names: Vec<String> = (0..10).map(|i| format!("f{i}.txt")).collect();
    let all: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    write_tree(dst.path(), &all);
    write_tree(src.path(), &all[..keep]);
    write_tree(src.path(), &[("new.txt", b"new")]);
    // The kept files are the same on both sides, mtime included (written
    // apart, they could differ by more than the 1 ms tolerance on a busy
    // machine and be copied again).
    for n in &names {
        for root in [src.path(), dst.path()] {
            let p = root.join(n);
            if p.exists() {
                common::set_mtime(&p, common::at(1_600_000_000, 0));
            }
        }
    }
    (src, dst)
}

fn refused(summary: &Value, out: &common::RunOutput, words: &[&str]) {
    assert_ne!(out.status, 0, "a refused run must fail: {summary}");
    assert_eq!(summary["Status"], "ERROR", "{summary}");
    assert_eq!(counter(summary, "FilesDeleted"), 0, "{summary}");
    let detail = summary["ErrorDetail"].as_str().unwrap_or_default();
    for w in words {
        assert!(detail.contains(w), "the error should say {w:?}: {summary}");
    }
}

#[test]
fn deleting_more_than_half_the_destination_is_refused_before_any_delete() {
    let state = common::tempdir();
    let (src, dst) = trees(4);
    let (s, d) = (path_str(src.path()), path_str(dst.path()));
    let args = [s.as_str(), d.as_str(), "--preserve-deleted-files", "remove"];
    let (out, summary) = sync_json(None, state.path(), &args);
    refused(
        &summary,
        &out,
        &[
            "6 of the 10 keys",
            "max_delete = 50%",
            "nothing was deleted",
            "--force",
            &d,
        ],
    );
    let got = read_tree(dst.path());
    assert_eq!(got.len(), 11, "all ten kept and new.txt copied: {got:?}");
    assert_eq!(counter(&summary, "FilesTransferred"), 1, "{summary}");

    // A dry run says the same and changes nothing.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    std::fs::remove_file(dst.path().join("new.txt")).expect("remove new.txt");
    let (out, summary) = sync_json(None, state.path(), &dry);
    refused(
        &summary,
        &out,
        &["6 of the 10 keys", "nothing would be deleted"],
    );
    assert_eq!(read_tree(dst.path()).len(), 10);

    // A limit that allows it.
    let mut allowed = args.to_vec();
    allowed.extend(["--max-delete", "60%"]);
    let summary = sync_ok(None, state.path(), &allowed);
    assert_eq!(counter(&summary, "FilesDeleted"), 6, "{summary}");
    assert_eq!(
        read_tree(dst.path()).keys().collect::<Vec<_>>(),
        ["f0.txt", "f1.txt", "f2.txt", "f3.txt", "new.txt"]
    );
}

#[test]
fn a_count_limit_refuses_above_the_count_and_force_lets_it_through() {
    let state = common::tempdir();
    let (src, dst) = trees(7);
    let (s, d) = (path_str(src.path()), path_str(dst.path()));
    let args = [
        s.as_str(),
        d.as_str(),
        "--preserve-deleted-files",
        "remove",
        "--max-delete",
        "2",
    ];
    let (out, summary) = sync_json(None, state.path(), &args);
    refused(&summary, &out, &["3 of the 10 keys", "max_delete = 2"]);
    assert_eq!(read_tree(dst.path()).len(), 11);

    let mut forced = args.to_vec();
    forced.push("--force");
    let summary = sync_ok(None, state.path(), &forced);
    assert_eq!(counter(&summary, "FilesDeleted"), 3, "{summary}");
    assert_eq!(read_tree(dst.path()).len(), 8);
}

#[test]
fn a_source_that_lists_nothing_is_refused_even_where_max_delete_allows_all() {
    let state = common::tempdir();
    let (src, dst) = (common::tempdir(), common::tempdir());
    write_tree(dst.path(), &[("a.txt", b"a"), ("b/c.txt", b"c")]);
    let (s, d) = (path_str(src.path()), path_str(dst.path()));
    let args = [
        s.as_str(),
        d.as_str(),
        "--preserve-deleted-files",
        "remove",
        "--max-delete",
        "100%",
    ];
    let (out, summary) = sync_json(None, state.path(), &args);
    refused(&summary, &out, &["lists no keys", &s, "--force"]);
    assert_eq!(read_tree(dst.path()).len(), 2);

    let mut forced = args.to_vec();
    forced.push("--force");
    let summary = sync_ok(None, state.path(), &forced);
    assert_eq!(counter(&summary, "FilesDeleted"), 2, "{summary}");
    assert!(read_tree(dst.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_destination_keeps_every_object_when_the_guard_refuses() {
    let server = common::s3s();
    let bucket = server.new_bucket("max-delete").await;
    let state = common::tempdir();
    let src = common::tempdir();
    write_tree(src.path(), &[("keep.txt", b"k")]);
    for k in ["p/keep.txt", "p/old-1.txt", "p/old-2.txt"] {
        server.put(&bucket, k, b"there").await;
    }
    let (s, url) = (path_str(src.path()), server.url(&bucket, "p"));
    let args = [
        s.as_str(),
        url.as_str(),
        "--preserve-deleted-files",
        "remove",
    ];
    let (out, summary) = sync_json(Some(&server), state.path(), &args);
    refused(&summary, &out, &["2 of the 3 keys"]);
    assert_eq!(
        server.keys(&bucket, "").await,
        ["p/keep.txt", "p/old-1.txt", "p/old-2.txt"]
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    let summary = sync_ok(Some(&server), state.path(), &forced);
    assert_eq!(counter(&summary, "FilesDeleted"), 2, "{summary}");
    assert_eq!(server.keys(&bucket, "").await, ["p/keep.txt"]);
}

#[test]
fn a_one_way_task_with_remove_is_guarded_and_runs_with_override_force() {
    let env = TaskEnv::new(&format!(
        "{}preserve_deleted_files = \"remove\"\nmax_delete = \"1\"\n",
        common::tasks::PAIR
    ));
    let (a, b) = (env.root().join("a"), env.root().join("b"));
    write_tree(&a, &[("x.txt", b"x")]);
    write_tree(&b, &[("x.txt", b"x"), ("y.txt", b"y"), ("z.txt", b"z")]);
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    let out = env.run(&["task", "start", "a-b", "--wait", "--json"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    let rec: Value = serde_json::from_str(&out.stdout).expect("an execution record");
    assert_eq!(status(&rec), "ERROR", "{rec:#}");
    let detail = rec["ErrorDetail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("2 of the 3 keys") && detail.contains("max_delete = 1"),
        "{rec:#}"
    );
    assert_eq!(read_tree(&b).len(), 3);
    let out = env.run(&[
        "task",
        "start",
        "a-b",
        "--override",
        "force=true",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(read_tree(&b).keys().collect::<Vec<_>>(), ["x.txt"]);
}
