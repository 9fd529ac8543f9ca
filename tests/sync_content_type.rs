//! Objects written from local files get a Content-Type from their name's
//! extension (single PUTs and multipart uploads alike); names without a
//! known extension get the server's default.

mod common;

use common::{path_str, sync_ok, write_tree};

#[tokio::test(flavor = "multi_thread")]
async fn uploads_carry_the_content_type_of_their_extension() {
    for server in [common::moto(), common::s3s()] {
        let bucket = server.new_bucket("content-type").await;
        let state = common::tempdir();
        let src = common::tempdir();
        let big = common::random_bytes(6 << 20);
        write_tree(
            src.path(),
            &[
                ("site/index.html", b"<p>hi</p>"),
                ("data/a.json", b"{}"),
                ("README", b"plain"),
                ("clip.mp4", &big),
            ],
        );
        let summary = sync_ok(
            Some(&server),
            state.path(),
            &[
                &path_str(src.path()),
                &server.url(&bucket, ""),
                "--multipart-threshold",
                "5242880",
                "--part-size",
                "5242880",
            ],
        );
        assert_eq!(
            common::counter(&summary, "FilesTransferred"),
            4,
            "{summary}"
        );
        let kind = server.kind;
        for (key, want) in [
            ("site/index.html", Some("text/html")),
            ("data/a.json", Some("application/json")),
            ("clip.mp4", Some("video/mp4")),
        ] {
            let head = server.head(&bucket, key).await.expect("the object");
            assert_eq!(head.content_type(), want, "{kind:?}: {key}");
        }
        let head = server.head(&bucket, "README").await.expect("README");
        let ct = head.content_type().unwrap_or("");
        assert!(
            ct.is_empty() || ct.ends_with("octet-stream"),
            "{kind:?}: README got {ct:?}, not the server's default"
        );
        let mp4 = server.head(&bucket, "clip.mp4").await.expect("clip.mp4");
        assert!(
            mp4.e_tag().is_some_and(|e| e.contains("-2")),
            "{kind:?}: clip.mp4 should be a two-part upload: {:?}",
            mp4.e_tag()
        );
    }
}
