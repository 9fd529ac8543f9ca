//! The progress line: shown on a terminal (with bytes moving inside a large
//! file), never when stderr is not one.

mod common;

use std::process::Command;

/// 3 MB at 1 MB/s: long enough for several progress frames.
fn slow_tree() -> (tempfile::TempDir, tempfile::TempDir) {
    let src = common::tempdir();
    std::fs::write(src.path().join("f"), vec![7u8; 3_000_000]).expect("write source file");
    (src, common::tempdir())
}

fn args(src: &std::path::Path, dst: &std::path::Path, state: &std::path::Path) -> Vec<String> {
    [
        "sync",
        &src.display().to_string(),
        &dst.join("out").display().to_string(),
        "--bytes-per-second",
        "1000000",
        "--state-dir",
        &state.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_terminal_shows_a_progress_line_whose_bytes_move_within_one_file() {
    let (src, dst) = slow_tree();
    let state = common::tempdir();
    let command = std::iter::once(env!("CARGO_BIN_EXE_syncmount").to_string())
        .chain(args(src.path(), dst.path(), state.path()))
        .collect::<Vec<_>>()
        .join(" ");
    let typescript = dst.path().join("typescript");
    // `script` (util-linux) runs the command on a pseudo-terminal.
    let out = Command::new("script")
        .args(["-qec", &command])
        .arg(&typescript)
        .output()
        .expect("`script` (util-linux) is needed for this test: apt-get install bsdutils");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let screen = String::from_utf8_lossy(&std::fs::read(&typescript).expect("typescript"))
        .replace('\r', "\n");
    assert!(
        screen.contains("0/1 files"),
        "no progress line on the terminal:\n{screen}"
    );
    assert!(
        screen.contains("1.00 MiB transferred") || screen.contains("2.00 MiB transferred"),
        "bytes did not move within the file:\n{screen}"
    );
}

#[test]
fn no_progress_line_is_written_when_stderr_is_not_a_terminal() {
    let (src, dst) = slow_tree();
    let state = common::tempdir();
    let out = Command::new(env!("CARGO_BIN_EXE_syncmount"))
        .args(args(src.path(), dst.path(), state.path()))
        .output()
        .expect("run syncmount");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("files,"),
        "progress leaked into a pipe:\n{stderr}"
    );
    assert!(stderr.contains("SUCCESS"), "{stderr}");
    assert_eq!(
        std::fs::read(dst.path().join("out/f"))
            .expect("copied file")
            .len(),
        3_000_000
    );
}
