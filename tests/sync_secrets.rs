//! Secrets never reach stdout, stderr, the report or an error message: not
//! when a run succeeds with the most verbose logging, not when the server
//! refuses the signature.

mod common;

use common::S3Server;

/// A secret nobody would print by accident: if it shows up, it leaked.
const CANARY: &str = "CanarySecret-4f1c9e-do-not-print";

fn assert_no_canary(what: &str, text: &str) {
    assert!(
        !text.contains(CANARY),
        "the secret key leaked into {what}:\n{text}"
    );
}

fn with_secret(server: &S3Server, secret: &str) -> S3Server {
    let mut s = server.clone();
    s.secret_key = secret.to_string();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verbose_successful_run_prints_no_secret_anywhere() {
    // moto accepts any secret, so the canary is really used to sign.
    let server = with_secret(&common::moto(), CANARY);
    let bucket = server.new_bucket("secrets-ok").await;
    let src = common::tempdir();
    common::write_tree(
        src.path(),
        &[("a.txt", b"hello"), ("d/b.bin", &[1u8; 2048])],
    );
    let state = common::tempdir();
    let report = state.path().join("report.jsonl");
    let mut cmd = common::sync_cmd(
        &server,
        state.path(),
        &[
            &src.path().display().to_string(),
            &server.url(&bucket, "p"),
            "-vv",
            "--json",
            "--report",
            &report.display().to_string(),
        ],
    );
    cmd.env("RUST_LOG", "trace");
    let out = common::run(cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        out.stderr.len() > 1000,
        "expected trace logging, got:\n{}",
        out.stderr
    );
    assert_no_canary("stdout", &out.stdout);
    assert_no_canary("stderr (trace logs)", &out.stderr);
    assert_no_canary(
        "the report",
        &std::fs::read_to_string(&report).expect("report"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_signature_names_the_problem_without_the_secret() {
    // s3s-fs checks signatures: the right key id with the canary as secret fails.
    let real = common::s3s();
    let bucket = real.new_bucket("secrets-bad").await;
    let server = with_secret(&real, CANARY);
    let src = common::tempdir();
    common::write_tree(src.path(), &[("a.txt", b"hello")]);
    let state = common::tempdir();
    let out = common::run(common::sync_cmd(
        &server,
        state.path(),
        &[
            &src.path().display().to_string(),
            &server.url(&bucket, "p"),
            "--json",
        ],
    ));
    assert_eq!(
        out.status, 1,
        "a refused signature must fail the run: {}",
        out.stderr
    );
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert!(
        all.contains("SignatureDoesNotMatch")
            || all.contains("AccessDenied")
            || all.contains("403"),
        "the error should say the request was refused:\n{all}"
    );
    assert_no_canary("the output of a failed run", &all);
}
