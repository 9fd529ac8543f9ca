//! How many requests a transfer costs, counted by a pass-through proxy: the
//! cost of a run is part of its behaviour (a HEAD per object is real money
//! and real time on a large bucket).

mod common;

use common::fault_proxy::{FaultPlan, FaultProxy};

const FILES: usize = 12;

#[tokio::test(flavor = "multi_thread")]
async fn downloading_new_small_objects_costs_one_get_each_and_no_head() {
    for server in common::data_path_servers() {
        let kind = server.kind;
        let bucket = server.new_bucket("req-down").await;
        for i in 0..FILES {
            server
                .put(&bucket, &format!("k{i:02}"), format!("body {i}").as_bytes())
                .await;
        }
        let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
        let dst = common::tempdir();
        let state = common::tempdir();
        let out = common::run(common::sync_cmd_via(
            &server,
            &proxy.endpoint,
            state.path(),
            &[
                &server.url(&bucket, ""),
                &dst.path().join("d").display().to_string(),
            ],
        ));
        assert_eq!(out.status, 0, "{kind:?}: {}", out.stderr);
        let log = proxy.counters.log();
        let count = |method: &str| log.iter().filter(|l| l.starts_with(method)).count();
        let object_gets = log
            .iter()
            .filter(|l| l.starts_with("GET ") && l.contains(&format!("/{bucket}/k")))
            .count();
        assert_eq!(count("HEAD "), 0, "{kind:?}: HEADs sent: {log:#?}");
        assert_eq!(object_gets, FILES, "{kind:?}: one GET per object: {log:#?}");
        for i in 0..FILES {
            let got = std::fs::read(dst.path().join("d").join(format!("k{i:02}")))
                .expect("downloaded file");
            assert_eq!(got, format!("body {i}").as_bytes(), "{kind:?}: k{i:02}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploading_new_small_files_costs_one_put_each() {
    for server in common::data_path_servers() {
        let kind = server.kind;
        let bucket = server.new_bucket("req-up").await;
        let src = common::tempdir();
        for i in 0..FILES {
            std::fs::write(src.path().join(format!("f{i:02}")), format!("data {i}"))
                .expect("write");
        }
        let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
        let state = common::tempdir();
        let out = common::run(common::sync_cmd_via(
            &server,
            &proxy.endpoint,
            state.path(),
            &[&src.path().display().to_string(), &server.url(&bucket, "")],
        ));
        assert_eq!(out.status, 0, "{kind:?}: {}", out.stderr);
        let log = proxy.counters.log();
        let puts = log.iter().filter(|l| l.starts_with("PUT ")).count();
        let heads = log.iter().filter(|l| l.starts_with("HEAD ")).count();
        assert_eq!(puts, FILES, "{kind:?}: {log:#?}");
        // Both servers return the stored checksum in the PUT's answer, so
        // verification needs no HEAD (it would ask when a server says nothing).
        assert!(
            heads == 0 || heads == FILES,
            "{kind:?}: {heads} HEADs: {log:#?}"
        );
        assert_eq!(server.keys(&bucket, "").await.len(), FILES, "{kind:?}");
    }
}
