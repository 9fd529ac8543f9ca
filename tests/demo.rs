//! Issue 14: `scripts/demo.sh` is part of the suite, run as a newcomer runs
//! it (with the binary this suite built): it must exit 0 — it checks each
//! of its steps itself — and show the file written through one mount in
//! the bucket, the execution record and both mounts gone after SIGTERM.

mod common;

use std::process::Command;

#[test]
fn the_demo_runs_every_step_and_the_file_crosses_from_one_mount_to_the_bucket() {
    common::mount::require_fuse();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/demo.sh"))
        .env("SYNCMOUNT_BIN", env!("CARGO_BIN_EXE_syncmount"))
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for shown in [
        // The file copied into the folder's mount, read from the bucket.
        "s3://demo-source/team/note.txt: written through a mount at ",
        // The execution that copied it, once it ended (not the newest one
        // at some instant, which may still be VERIFYING).
        "\"Status\": \"SUCCESS\"",
        "\"FilesTransferredBToA\": 1",
        "daemon exited with status 0",
        "both mounts are gone",
    ] {
        assert!(
            stdout.contains(shown),
            "`{shown}` not shown:\n{stdout}\n{stderr}"
        );
    }
}
